"""Every Redis key and stream field name ratesvc uses: the one place that knows them."""

STREAM = "ratesvc:ticks"
DEAD_LETTER = "ratesvc:ticks:dead"
DEAD_LETTER_MAXLEN = 10_000  # the dead-letter stream keeps about this many newest entries
LATEST = "ratesvc:latest"  # hash: "exchanger:direction" -> tick fields as JSON
STATUS = "ratesvc:status"  # hash: source -> status fields as JSON
GROUP = "persister"
LEASE = "ratesvc:collector:lease"  # string "<holder>:<term>" with a PX expiry: the publisher
LEASE_TERM = "ratesvc:collector:term"  # counter: INCR on every acquisition = the fencing term
CALLS = "ratesvc:calls:"  # + "<source>:<YYYY-MM>": budgeted API calls made by every collector
CALLS_TTL_S = 40 * 24 * 3600  # a month's counter outlives its month, then goes
# + "<source>": hash of the deployment's last metered call: "called_ms" (when it went out, the
# schedule every collector follows) and its last good answer, "body" and "received_ms"
METERED = "ratesvc:metered:"
# + "<venue>": "<end epoch ms> <why>" with a PX expiry at that end: a ban (418) or Retry-After one
# collector was told, which every collector honours before its next request or handshake
BAN = "ratesvc:ban:"
TERM_FIELD = "term"  # stream field: the lease term a fenced publish was made under
