"""Making test pairs and measuring restorations: `vividvr degrade`, `vividvr eval`, `vividvr compare`.

    degrade.py   CreativeVR-style structural and Real-ESRGAN-style photometric degradations
    metrics.py   PSNR/SSIM (RGB and Y), flow.py: warping error and flicker, lpips.py: optional LPIPS
    evaluate.py  per-frame metrics of a video, report.py: CSV/JSON/table/plot
    compare.py   side-by-side, grid, split and slider videos and contact sheets

Layer: may import vividcli.errors, vividcli.media and vividcli.progress, nothing above them.
"""
