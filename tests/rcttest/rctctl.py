"""Running rctctl against a state dir."""
import subprocess


def run(rctctl, state, *args):
    """rctctl --state-dir STATE ARGS..., output captured as text."""
    return subprocess.run([rctctl, "--state-dir", state] + list(args), capture_output=True, text=True)
