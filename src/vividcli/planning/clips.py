"""Frame padding and temporal aggregate sampling (overlapping clips), as in the reference.

Vocabulary used throughout:

* frames are counted in the (upscaled) input video, 0-based;
* a clip of P = 8k+1 frames is encoded by the VAE into 2k+1 latents and one
  copy of the first latent is prepended for the transformer's temporal patch
  size 2, so a clip has 2k+2 latents. Local latents 0 and 1 both stand for the
  clip's first frame; local latent j >= 2 stands for clip frames 4j-7 .. 4j-4;
* a *global latent id* g >= 1 stands for video frames 4g-3 .. 4g. Clips start
  on multiples of 4 frames, so local latent j >= 2 of a clip that starts at
  video frame 4s is global id s + j - 1. The first-frame latents (local 0, 1)
  have no global id and are never shared between clips.

With clip length N = 8k+1 the reference overlaps neighbours by O = 4k+1 frames
(stride 4k frames = k latents). After every denoising step each clip's
overlapping latents (and the scheduler's previous x0 estimate) are overwritten
with the values of the clip that owns them; after decoding each clip keeps only
its share of the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from vividcli.errors import UsageError

FRAMES_PER_LATENT = 4
# Local latents 0 and 1 both encode a clip's first frame (see module docstring).
FIRST_SHARED_LATENT = 2


def frame_padding(num_frames: int) -> int:
    """Frames to append (copies of the last frame) to reach the next 8k+1 count.

    The VAE wants 8k+1 frames. After decoding, the padding is removed by keeping
    the first `num_frames` decoded frames.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return (8 - (num_frames - 1) % 8) % 8


def latent_frame_count(num_padded_frames: int) -> int:
    """Latents the VAE makes from an 8k+1-frame video: the first frame alone, then 4 per latent."""
    return (num_padded_frames - 1) // FRAMES_PER_LATENT + 1


def check_clip_frames(clip_frames: int) -> None:
    """Raise UsageError unless clip_frames is 8k+1 with k >= 1 (the reference asserts 8k+1)."""
    if clip_frames < 9 or clip_frames % 8 != 1:
        raise UsageError(f"clip length must be 8k+1 frames with k >= 1 (9, 17, ..., 121), got {clip_frames}")


def uses_temporal_aggregation(num_frames: int, clip_frames: int) -> bool:
    """Whether the video is split into overlapping clips (only when longer than one clip)."""
    return num_frames > clip_frames


@dataclass(frozen=True)
class Clip:
    """One temporal clip of the split video.

    `start`/`stop` are video frames [start, stop); the clip is padded with
    `padding` copies of its last frame before encoding. `latent_ids` is the
    [first, stop) range of global latent ids of its local latents 2, 3, ...;
    `owned_ids` the sub-range it is the owner of. `keep` is the [start, stop)
    range of its decoded frames that goes to the output (the padding frames
    at the end are never in it), at video frames starting at `output_start`.
    """

    index: int
    start: int
    stop: int
    padding: int
    latent_ids: tuple[int, int]
    owned_ids: tuple[int, int]
    keep: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    @property
    def padded_frames(self) -> int:
        return self.num_frames + self.padding

    @property
    def output_start(self) -> int:
        return self.start + self.keep[0]

    def local_latent(self, latent_id: int) -> int:
        """Index along the clip's latent time axis (with the prepended copy) of a global id."""
        return latent_id - self.latent_ids[0] + FIRST_SHARED_LATENT


@dataclass(frozen=True)
class LatentCopy:
    """After each step: dst_clip latents[:, dst] = src_clip latents[:, src] (same for old x0)."""

    dst_clip: int
    dst: tuple[int, int]
    src_clip: int
    src: tuple[int, int]


@dataclass(frozen=True)
class TemporalPlan:
    """The whole split: clips, ownership of global latent ids, and the merge copies."""

    num_frames: int
    clip_frames: int
    overlap_frames: int
    frame_stride: int
    overlap_latents: int
    latent_stride: int
    clips: tuple[Clip, ...]
    # (global latent id, owning clip) in id order; a tuple keeps the plan immutable.
    owners: tuple[tuple[int, int], ...]
    merge: tuple[LatentCopy, ...]

    def clip_latent_map(self) -> dict[int, tuple[int, int]]:
        """Clip index -> (first, stop) global latent ids, as the reference prints it."""
        return {clip.index: clip.latent_ids for clip in self.clips}

    def owner_map(self) -> dict[int, int]:
        """Global latent id -> owning clip, as the reference prints it."""
        return dict(self.owners)

    @property
    def output_frames(self) -> int:
        return sum(clip.keep[1] - clip.keep[0] for clip in self.clips)


def whole_video_clip(num_frames: int) -> Clip:
    """The single clip of a video that fits in one clip: padded to 8k+1, every frame kept."""
    return Clip(index=0, start=0, stop=num_frames, padding=frame_padding(num_frames),
                latent_ids=(0, 0), owned_ids=(0, 0), keep=(0, num_frames))


def plan_temporal(num_frames: int, clip_frames: int) -> TemporalPlan:
    """Split a video of `num_frames` (unpadded) frames into overlapping clips of `clip_frames`.

    Reference `infer_split_clips`. The whole video is *not* padded on this path;
    only a short last clip is padded (to the next 8k+1, which for clip lengths
    above 17 can be shorter than `clip_frames`). The reference only takes this
    path when num_frames > clip_frames; with a single clip its merge step would
    look up latent ids nobody owns, so that case is rejected here.

    Quirk kept from the reference: when clip_frames = 8k+1 with k odd (9, 25,
    ..., the default 121) the decoded-frame cut between two clips falls 2
    frames after the first frame of the next clip's first owned latent, so the
    first two frames of that latent come from the previous clip's decode. With
    k even (17, 33, ...) cuts and latent ownership line up.
    """
    check_clip_frames(clip_frames)
    if not uses_temporal_aggregation(num_frames, clip_frames):
        raise ValueError(f"{num_frames} frames fit in one clip of {clip_frames}; use the whole-video path")
    overlap = (clip_frames - 1) // 2 + 1
    frame_stride = clip_frames - overlap
    overlap_latents = (overlap - 1) // FRAMES_PER_LATENT
    latent_stride = (clip_frames - 1) // FRAMES_PER_LATENT - overlap_latents
    count = _clip_count(num_frames, clip_frames, frame_stride)
    spans = [_clip_span(c, num_frames, clip_frames, frame_stride, latent_stride) for c in range(count)]
    owners = _owner_map(spans, overlap_latents)
    clips = tuple(_make_clip(c, count, span, owners, overlap) for c, span in enumerate(spans))
    return TemporalPlan(
        num_frames=num_frames,
        clip_frames=clip_frames,
        overlap_frames=overlap,
        frame_stride=frame_stride,
        overlap_latents=overlap_latents,
        latent_stride=latent_stride,
        clips=clips,
        owners=tuple(sorted(owners.items())),
        merge=tuple(_merge_copies(clips, owners)),
    )


@dataclass(frozen=True)
class _Span:
    start: int
    stop: int
    padding: int
    latent_ids: tuple[int, int]


def _clip_count(num_frames: int, clip_frames: int, frame_stride: int) -> int:
    # As many full strides as fit, plus one more clip if frames are left over.
    count = (num_frames - clip_frames) // frame_stride + 1
    if (count - 1) * frame_stride + clip_frames < num_frames:
        count += 1
    return max(1, count)


def _clip_span(c: int, num_frames: int, clip_frames: int, frame_stride: int, latent_stride: int) -> _Span:
    start = c * frame_stride
    stop = min(start + clip_frames, num_frames)
    padding = frame_padding(stop - start)
    # Latents after the first one; each covers 4 new frames.
    shared = latent_frame_count(stop - start + padding) - 1
    first_id = c * latent_stride + 1
    return _Span(start, stop, padding, (first_id, first_id + shared))


def _owner_map(spans: list[_Span], overlap_latents: int) -> dict[int, int]:
    """Reference ownership: each clip claims a centred share; later clips win ties.

    Inner clips give up `overlap_latents` ids, split between both ends; the
    first and last clip only give up half (rounded down) at their inner end.
    With an odd `overlap_latents` the first clip therefore claims one id of the
    second clip's share; the second clip, claiming later, keeps it.
    """
    owners: dict[int, int] = {}
    half = overlap_latents // 2
    for c, span in enumerate(spans):
        first, stop = span.latent_ids
        is_end = c == 0 or c == len(spans) - 1
        num_owned = (stop - first) - (half if is_end else overlap_latents)
        owned_first = first + (half if c > 0 else 0)
        for latent_id in range(owned_first, owned_first + num_owned):
            owners[latent_id] = c
    return owners


def _make_clip(c: int, count: int, span: _Span, owners: dict[int, int], overlap: int) -> Clip:
    mine = [i for i, owner in owners.items() if owner == c]
    keep_start = (overlap + 1) // 2 if c > 0 else 0
    keep_stop = (span.stop - span.start) - (overlap // 2 if c < count - 1 else 0)
    return Clip(
        index=c,
        start=span.start,
        stop=span.stop,
        padding=span.padding,
        latent_ids=span.latent_ids,
        owned_ids=(min(mine), max(mine) + 1),
        keep=(keep_start, keep_stop),
    )


def _merge_copies(clips: tuple[Clip, ...], owners: dict[int, int]) -> list[LatentCopy]:
    """Copies that give every clip its owners' values on the latents it shares.

    A clip only ever overwrites latents it does not own and only reads latents
    its source owns, so the copies do not interfere: applying them in any order
    (the reference goes clip by clip, in place) gives the same result.
    """
    copies: list[LatentCopy] = []
    for dst in clips:
        for src_index, first_id, stop_id in _foreign_runs(dst, owners):
            copies.append(_copy(dst, clips[src_index], first_id, stop_id))
    return copies


def _foreign_runs(dst: Clip, owners: dict[int, int]) -> list[tuple[int, int, int]]:
    """Maximal (owner, first id, stop id) runs of dst's latent ids owned by another clip."""
    runs: list[tuple[int, int, int]] = []
    first, stop = dst.latent_ids
    for latent_id in range(first, stop):
        # Ownership has no gaps inside any clip's range (property-tested), so
        # a KeyError here would be a planning bug, as it is in the reference.
        src = owners[latent_id]
        if src == dst.index:
            continue
        if runs and runs[-1][0] == src and runs[-1][2] == latent_id:
            runs[-1] = (src, runs[-1][1], latent_id + 1)
        else:
            runs.append((src, latent_id, latent_id + 1))
    return runs


def _copy(dst: Clip, src: Clip, first_id: int, stop_id: int) -> LatentCopy:
    return LatentCopy(
        dst_clip=dst.index,
        dst=(dst.local_latent(first_id), dst.local_latent(stop_id)),
        src_clip=src.index,
        src=(src.local_latent(first_id), src.local_latent(stop_id)),
    )
