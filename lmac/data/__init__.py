"""The data: ESC-50 (``esc50``), WHAM! noise (``wham``), the synthetic sets (``synthetic``) and the
test-time contaminations (``contamination``).
"""
