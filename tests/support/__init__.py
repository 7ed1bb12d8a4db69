"""What the tests share that is not a fixture: servers, databases, processes, waiting, the
reference models the stores are checked against.

Import it as ``from support.servers import ServerThread`` (``tests/`` is on ``sys.path``: pytest
puts the folder of the rootdir's ``conftest.py`` there). Fixtures stay in the ``conftest.py``
files, which import from here too. No test module imports ``conftest`` or another test module,
and every helper lives here (``tests/test_suite_layout.py`` holds the suite to that).
"""
