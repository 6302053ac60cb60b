"""Pictures (``figures``), training curves (``curves``), the listening report (``report``) and the
comparison tables (``comparison``).
"""
