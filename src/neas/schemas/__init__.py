"""The commands' schemas: one config dataclass per stage or command, declared once — each field a
flag, a YAML key and a ``key=value`` override (:mod:`neas.config`).

The modules here import nothing but :mod:`neas.config`, :mod:`neas.options` and the standard
library, so ``neas <command> --help`` and every option error are answered without importing torch
(tests/test_imports.py holds this). The code that runs a command lives in :mod:`neas.recipes`; a
check that needs a heavy library (timm's RandAugment parser) imports it in the check itself.
"""
