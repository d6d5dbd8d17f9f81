"""The UM worker: answers the calls the call router sends, takes voicemail, serves subscribers.

Sans-I/O cores (one concern each):

    g711      G.711 mu-law/A-law tables, transcoding, loudness
    wav       WAV (RIFF) read/write for G.711 and 16-bit PCM
    sdp       SDP parsing and RFC 3264 offer/answer (PCMU, PCMA, telephone-event, SDES, ICE)
    rtp       RTP receive/send state with aiortc's packets: jitter buffer, RFC 3550 stats, RTCP SR/RR
    dtmf      RFC 4733 telephone-event decode/encode
    srtp      SDES keys (RFC 4568) and pylibsrtp sessions
    store     the voicemail store (WAV + JSON, temp file + fsync + rename)
    pins      PIN policy and salted PIN hashes with lockout
    prompts   spoken prompts (rendered clips), operator recordings or tone patterns; greetings
    catalogue the prompt sentences (en, de) and the words of numbers, ordinals, dates
    speech    espeak-ng rendering, PyAV decoding to 8 kHz, phrases (slots filled with clips)
    goertzel  in-band DTMF detection on G.711 audio (no telephone-event offered)
    menus     leave a message; the phone menu (setup, messages, greetings, PIN), over a small call interface
    attendant auto attendants' menus: transfers (REFER, or 302 in early media), dial by name/extension

and the I/O around them:

    transport media transports: direct UDP, TURN relay on the edge (aioice), ICE (aioice)
    tokens    media relay tokens from the A/V authentication service (MRAS, HTTPS fallback)
    media     a call's media session (transport + RTP + SRTP + RTCP), the recorder, the media clock
    calls     the SIP side: the worker slots' call handler (UAS) and outbound calls (UAC, play-on-phone)
    service   the Twisted service that plugs the call handler into um.mailbox's worker slots
    webapi    UM web services on [web] http_port (play-on-phone, pin-reset), HTTP/HTTPS on one port
"""
