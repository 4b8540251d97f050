"""`--offload auto` through the planner (pure arithmetic, no GPU): the fastest candidate whose planned peak
fits the budget, adding token chunking and then sequential CFG only where needed, the user's own settings
kept, a one-line refusal naming the smallest budget when nothing fits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vividcli.config import RestoreOptions
from vividcli.errors import UsageError
from vividcli.models.offload import resolve_memory, resolve_offload
from vividcli.planning.cost import AUTO_FF_CHUNKS, OFFLOAD_ORDER, choose_memory, estimate, memory_candidates, run_shape
from vividcli.planning.plan import plan_restoration

GB = 10**9


def paper_shape(**options):
    opts = RestoreOptions(**options)
    return run_shape(plan_restoration(121, 1024, 1820, opts), opts)


def peak(shape, mode, sequential, chunks, weights="bf16") -> int:
    batch = 1 if sequential else shape.cfg
    return estimate(dataclasses.replace(shape, cfg_batch=batch), mode, weights, ff_chunks=chunks).peak_device_bytes


def test_candidates_go_from_fastest_to_smallest() -> None:
    candidates = memory_candidates()
    assert [c[0] for c in candidates[::4]] == list(OFFLOAD_ORDER)
    assert candidates[:4] == [("none", False, 1), ("none", False, AUTO_FF_CHUNKS), ("none", True, 1),
                              ("none", True, AUTO_FF_CHUNKS)]
    assert memory_candidates("group", True, 3) == [("group", True, 3)]  # an explicit mode is taken as it is
    assert all(sequential for _, sequential, _ in memory_candidates(sequential_cfg=True))  # the user's choice stays
    assert {chunks for *_, chunks in memory_candidates(ff_chunks=4)} == {4}


@pytest.mark.parametrize("budget_gb", [200, 40, 30, 24, 22, 16, 12, 11.5])
def test_auto_takes_the_first_candidate_that_fits(budget_gb) -> None:
    shape = paper_shape()
    budget = int(budget_gb * GB)
    choice = choose_memory(shape, budget)
    assert choice.fits and choice.cost.peak_device_bytes <= budget
    assert choice.cost.offload == choice.offload and choice.cost.ff_chunks == choice.ff_chunks
    assert choice.cost.shape.cfg_batch == (1 if choice.sequential_cfg else 2)
    candidates = memory_candidates()
    for earlier in candidates[: candidates.index((choice.offload, choice.sequential_cfg, choice.ff_chunks))]:
        assert peak(shape, *earlier) > budget, earlier


def test_the_24_gb_card_runs_model_offload_with_token_chunking() -> None:
    """The issue's target: --offload model in 24 GB at CFG batch 2 (planned 23.8 GB with 8 token slices)."""
    choice = choose_memory(paper_shape(), 24 * GB)
    assert (choice.offload, choice.sequential_cfg, choice.ff_chunks) == ("model", False, AUTO_FF_CHUNKS)
    assert choice.describe() == f"--offload model --ff-chunks {AUTO_FF_CHUNKS}"


def test_nothing_fits_refuses_in_one_line_or_gives_the_smallest() -> None:
    shape = paper_shape()
    with pytest.raises(UsageError) as refused:
        choose_memory(shape, 2 * GB)
    message = str(refused.value)
    assert "\n" not in message and "--offload" in message and "--weights fp8" in message
    smallest = choose_memory(shape, 2 * GB, strict=False)
    assert not smallest.fits
    assert smallest.cost.peak_device_bytes == min(peak(shape, *c) for c in memory_candidates())
    assert choose_memory(shape, None).offload == "none"  # no budget: the fastest


def test_resolve_memory_plans_for_the_input_without_a_gpu() -> None:
    options = RestoreOptions()
    plan = plan_restoration(121, 1024, 1820, options)
    on_cpu = resolve_memory("auto", "cpu", plan, options)
    assert (on_cpu.offload, on_cpu.sequential_cfg, on_cpu.ff_chunks) == ("none", False, 1)
    explicit = resolve_memory("group", "cuda", plan, dataclasses.replace(options, sequential_cfg=True), ff_chunks=2)
    assert (explicit.offload, explicit.sequential_cfg, explicit.ff_chunks) == ("group", True, 2)
    budget = resolve_memory("auto", "cuda", plan, options, "fp8", budget_bytes=12 * GB)  # no CUDA call with a budget
    assert budget.cost.weights == "fp8" and budget.cost.peak_device_bytes <= 12 * GB
    float32 = resolve_memory("auto", "cuda", plan, options, dtype=torch.float32, budget_bytes=1000 * GB)
    assert float32.cost.shape.dtype_bytes == 4
    assert resolve_offload("auto", "cpu") == "none" and resolve_offload("model", "cpu") == "model"
