"""Session-wide test setup."""

# Lightning adds a StreamHandler bound to the sys.stderr of the moment it is first imported. Imported inside a test
# that uses capsys, that is the test's own capture stream, closed when the test ends, and every later Lightning log
# line prints "--- Logging error ---" with a traceback into other tests' output. Importing it here binds the handler
# to pytest's session-wide stream instead.
import lightning.pytorch  # noqa: F401
