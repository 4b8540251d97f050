"""Planning: everything about a run that follows from the input's shape and the options.

Pure functions over sizes (no model, no frames): `geometry` (pixel and latent sizes), `tiles`
(spatial tiles and their blend regions), `clips` (frame padding, temporal clips and the latent
merge), `captions` (the pixel region each caption describes) and `plan` (`RestorePlan`, all of it
for one input).
"""
