from lrfind.cli import entry

entry()
