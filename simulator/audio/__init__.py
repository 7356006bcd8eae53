"""Audio shared by the caller, the mock and the measurements: the μ-law codec, the speech
fixtures, the utterance bank built from them, and the tag frames that mark a line."""
