from vmc.cli import entry

entry()
