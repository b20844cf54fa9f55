"""Video quality diagnosis (视频质量诊断): is the picture usable, not only is the camera answering.

- :mod:`~camwatch.quality.checks`: the diagnoses, pure functions of numpy arrays.
- :mod:`~camwatch.quality.config`: the ``quality:`` config section.
- :mod:`~camwatch.probes.keyframe`: one decodable keyframe over RTSP (H.264 / H.265).
- :mod:`~camwatch.quality.decode`: PyAV decoding in a bounded worker pool, the thumbnail JPEG.
- :mod:`~camwatch.quality.sample`: fetch + decode + checks for one channel -> a verdict.
- :mod:`~camwatch.quality.book`: each channel's quality state (ok / degraded / unknown).
- :mod:`~camwatch.quality.sampler`: the daemon's sampling lane, on its own cadence.
"""
