"""What a caller hears, judged: cross-correlation against rendered clips, speech-vs-tone, and pocketsphinx.

pocketsphinx (PyPI, its bundled en-us model, offline) decodes with a JSGF grammar built from the
catalogue's English sentences, each slot of digits as `<d>` words, so the answer is one of the
catalogue's sentences with the digits it heard. The caller's G.711 is upsampled to the model's 16 kHz
with FFmpeg's resampler (PyAV); dither keeps G.711's digital silence from breaking the features.
"""

from __future__ import annotations

import re

import numpy as np

from um.worker import catalogue, g711

DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
               "seven": "7", "eight": "8", "nine": "9"}


def samples(payload: bytes, codec: str = "PCMU") -> np.ndarray:
    return np.frombuffer(g711.g711_to_pcm16(payload, codec), dtype="<i2").astype(np.float64)


def find(clip: np.ndarray, heard: np.ndarray, start: int = 0) -> tuple[int, float]:
    """Where `clip` best matches in `heard[start:]` (FFT cross-correlation), and the normalized peak (1.0 = same)."""
    segment = heard[start:]
    if len(segment) < len(clip):
        return -1, 0.0
    n = 1 << int(np.ceil(np.log2(len(segment) + len(clip))))
    corr = np.fft.irfft(np.fft.rfft(segment, n) * np.conj(np.fft.rfft(clip, n)), n)[: len(segment) - len(clip) + 1]
    energy = np.convolve(segment ** 2, np.ones(len(clip)), mode="valid")
    norm = corr / np.sqrt(np.maximum(energy, 1e-9) * float(np.sum(clip ** 2)))
    best = int(np.argmax(norm))
    return start + best, float(norm[best])


def tonal_share(audio: np.ndarray, frame: int = 256) -> float:
    """Median share of a frame's energy in its strongest spectral peak (±1 bin): ~1 for tones, low for speech."""
    shares = []
    window = np.hanning(frame)
    for index in range(0, len(audio) - frame, frame):
        spectrum = np.abs(np.fft.rfft(audio[index:index + frame] * window)) ** 2
        total = float(spectrum.sum())
        if total < 1e6 * frame:  # silence
            continue
        peak = int(np.argmax(spectrum))
        shares.append(float(spectrum[max(0, peak - 1):peak + 2].sum()) / total)
    return float(np.median(shares)) if shares else 1.0


def pitch_spread(audio: np.ndarray, frame: int = 256) -> int:
    """How many different dominant frequencies (50 Hz bins) the loud frames have: speech moves, tones do not."""
    bins = set()
    for index in range(0, len(audio) - frame, frame):
        chunk = audio[index:index + frame]
        if float(np.sqrt(np.mean(chunk ** 2))) < 500:
            continue
        bins.add(int(np.argmax(np.abs(np.fft.rfft(chunk * np.hanning(frame))))) * 8000 // frame // 50)
    return len(bins)


def grammar(lang: str = "en") -> str:
    """JSGF: every catalogue sentence of `lang`, slots of digits (extension, caller, count) as <d>+."""
    alternatives = []
    for texts in catalogue.SENTENCES.values():
        text = texts[lang]
        if re.search(r"\{(date|time|duration|label|name|key)\}", text):
            continue
        words = re.sub(r"\{[a-z_]+\}", " <d>+ ", text.lower())
        words = re.sub(r"\b([0-9])\b", lambda m: catalogue.number_text(int(m.group(1)), lang), words)
        words = re.sub(r"[^a-z<>+' ]", " ", words)
        alternatives.append("(" + " ".join(words.split()) + ")")
    digits = " | ".join(DIGIT_WORDS)
    return f"#JSGF V1.0;\ngrammar umedge;\n<d> = {digits};\npublic <s> = " + " | ".join(alternatives) + ";\n"


def upsample(pcm8: bytes) -> bytes:
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm8) // 2)
    frame.planes[0].update(pcm8)
    frame.sample_rate = 8000
    out = b""
    for converted in resampler.resample(frame) + resampler.resample(None):
        out += bytes(converted.planes[0])[: converted.samples * 2]
    return out


def recognize(audio: np.ndarray, lang: str = "en") -> str | None:
    """pocketsphinx with the catalogue's grammar: the sentence it heard (lower case words), or None."""
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL", dither=True, beam=1e-60, wbeam=1e-40)  # wide: synthetic speech at 8 kHz
    decoder.add_jsgf_string("umedge", grammar(lang).encode())
    decoder.activate_search("umedge")
    decoder.start_utt()
    decoder.process_raw(upsample(audio.astype("<i2").tobytes()), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else None


def spoken_digits(text: str) -> str:
    return "".join(DIGIT_WORDS.get(word, "") for word in text.split())
