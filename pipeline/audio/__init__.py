"""Audio in and out: probe once, prepare, decode in bounded memory, cut and stitch long recordings, check quality.

Every ffmpeg/ffprobe process in the library starts in ``pipeline.audio.ffmpeg``, so that the one tool reading
untrusted bytes can be sandboxed in one place; the other modules pass the job's ``AudioInfo`` down instead of probing
again.
"""
