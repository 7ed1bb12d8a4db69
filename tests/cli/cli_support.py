"""What the CLI tests share: a data folder handle that runs commands against it."""

from __future__ import annotations

from dataclasses import dataclass, field

from typer.testing import CliRunner, Result

from modelyard.cli.main import app


@dataclass
class Data:
    uri: str
    runs: dict[str, str] = field(default_factory=dict)  # run name -> id

    def cli(self, *args: str, uri: bool = True) -> Result:
        argv = [*args, "--uri", self.uri] if uri else list(args)
        # Wide, so tables never truncate the 32-character run ids.
        return CliRunner().invoke(app, argv, env={"COLUMNS": "240"})

    def ok(self, *args: str, uri: bool = True) -> Result:
        result = self.cli(*args, uri=uri)
        assert result.exit_code == 0, result.output
        return result

    def error(self, *args: str, uri: bool = True) -> str:
        """Run a command that must fail; its error: one line on stderr, nothing on stdout."""
        result = self.cli(*args, uri=uri)
        assert result.exit_code != 0, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return lines[0]

