"""``python -m robustcert`` (also used by ``torchrun ... -m robustcert``)."""
from .cli import main

main()
