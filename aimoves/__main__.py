from aimoves.cli import app

app(prog_name="aimoves")
