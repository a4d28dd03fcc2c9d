"""Operations: the background services (start, stop, status), their supervisor, and where
each stage reads and writes."""
