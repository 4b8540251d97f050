"""Test support shipped with the package (like diffusers' `testing_utils`): tiny random checkpoints in
the official layout (`checkpoints`), the official full-size configs they shrink (`configs`, shared with
benchmarks/), small real media files (`media`) and the forked `vividvr` runs of the resume tests
(`resume_child`). Nothing in the product imports it."""
