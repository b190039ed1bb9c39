"""Socket-free SMTP framing: command lines, message text, replies (tested without timers)."""
