"""The form of a Bearer credential (RFC 6750 b64token): what the HTTP object store sends and the lab's object
server accepts. Its own module so that checking a token imports no HTTP client."""
import re

TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
