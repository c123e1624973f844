"""Audio in and out: the one module that runs ffmpeg/ffprobe, probing, preparing, segments and quality."""
