"""whyrec.cli.options.option_group: one group of options, declared once, on several commands;
whyrec.config.FileSettings: one precedence for every settings class."""

from pathlib import Path

import typer
from typer.testing import CliRunner

from whyrec.cli.options import option_group

GROUP = (
    ("level", int, typer.Option(1, "--level", help="How much.")),
    ("tag", str | None, typer.Option(None, "--tag", help="A label.")),
)


def _app(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @option_group(GROUP, into="opts")
    def first(name: str = typer.Argument(...), loud: bool = False, *, opts: dict) -> None:
        seen.append(("first", name, loud, opts))

    @app.command()
    @option_group(GROUP, into="opts")
    def second(*, opts: dict) -> None:
        seen.append(("second", opts))

    return app


def test_every_command_takes_the_group_and_gets_it_as_one_dict():
    seen: list = []
    app = _app(seen)
    res = CliRunner().invoke(app, ["first", "x", "--loud", "--level", "3", "--tag", "t"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["second"])
    assert res.exit_code == 0, res.output
    assert seen == [
        ("first", "x", True, {"level": 3, "tag": "t"}),
        ("second", {"level": 1, "tag": None}),
    ]


def test_the_group_is_shown_after_the_commands_own_options_and_typed():
    app = _app([])
    help_text = CliRunner().invoke(app, ["first", "--help"], env={"COLUMNS": "120"}).output
    assert help_text.index("--loud") < help_text.index("--level") < help_text.index("--tag")
    res = CliRunner().invoke(app, ["second", "--level", "many"])
    assert res.exit_code != 0 and "--level" in res.output  # an int option refuses text


def test_llm_and_serve_settings_share_one_precedence(tmp_path: Path, monkeypatch):
    from whyrec.llm import LLMSettings
    from whyrec.serve import ServeSettings

    cfg = tmp_path / "whyrec.toml"
    cfg.write_text("[llm]\nmax_tokens = 77\nseed = 5\n[serve]\nport = 8123\nk_default = 7\n")
    monkeypatch.setenv("WHYREC_LLM_CONFIG", str(cfg))
    monkeypatch.setenv("WHYREC_SERVE_CONFIG", str(cfg))
    monkeypatch.setenv("WHYREC_LLM_SEED", "9")  # the environment beats the file
    monkeypatch.setenv("WHYREC_SERVE_K_DEFAULT", "8")
    llm = LLMSettings.load()
    assert (llm.max_tokens, llm.seed, llm.config_file) == (77, 9, cfg)
    assert LLMSettings.load(seed=11).seed == 11  # values given in code beat both
    serve = ServeSettings.load(run="r")
    assert (serve.port, serve.k_default, serve.config_file) == (8123, 8, cfg)
    other = tmp_path / "other.toml"
    other.write_text("[serve]\nport = 9001\n")
    assert ServeSettings.load(other, run="r").port == 9001  # config_file beats $..._CONFIG
