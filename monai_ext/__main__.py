"""``python -m monai_ext <verb>``: see :mod:`monai_ext.cli`."""

from monai_ext.cli import main

if __name__ == "__main__":
    main()
