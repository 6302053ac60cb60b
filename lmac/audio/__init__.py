"""Reading audio files (``io``) and long recordings block by block (``stream``)."""
