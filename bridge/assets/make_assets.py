"""Regenerate the bridge's audio assets (run by hand; needs espeak-ng and sox).

``apology.ulaw``: what a caller hears when the OpenAI session cannot be opened or
breaks mid-call — never dead air. Raw 8 kHz μ-law, exactly what a Twilio
``media`` payload carries, so the bridge sends it without converting anything.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
APOLOGY = "Sorry, our assistant is unavailable right now. Please call again later. Goodbye."


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        wav = Path(t) / "apology.wav"
        subprocess.run(["espeak-ng", "-v", "en-us+f3", "-s", "165", "-w", str(wav), APOLOGY], check=True)
        subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw",
                        str(HERE / "apology.ulaw"), "norm", "-3"], check=True)
    print(f"wrote {HERE / 'apology.ulaw'} ({(HERE / 'apology.ulaw').stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
