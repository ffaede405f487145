"""The test suite; its packages mirror ``src/dyrelu`` (``tests/train`` tests ``dyrelu.train``, and so on).

Every folder is a package so that test modules of the same name (``tests/cli/test_train.py``,
``tests/train/test_train.py``) import under distinct names; ``pyproject.toml`` puts this folder on the path
too, for the modules that import ``conftest``'s helpers by name.
"""
