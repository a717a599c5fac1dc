"""Operator console: a line-oriented shell over a serial port (or any byte stream).

    lineeditor  bytes in → complete lines / BREAK / errors (backspace, 4 KiB cap, non-UTF-8)
    auth        scrypt PIN hashes and the login lockout
    shell       one line → argv → command layer (device.control) → text or one-line JSON
    serial_port the thread that reads a pyserial port and drives the shell
"""
