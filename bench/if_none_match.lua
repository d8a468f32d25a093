-- wrk -s bench/if_none_match.lua: every request revalidates with the ETag given in $ETAG, so a
-- service whose body has not changed answers 304 (no body). Set once: no per-request Lua.
local etag = os.getenv("ETAG")
if etag == nil or etag == "" then
  error("set ETAG to the current ETag of the URL (quoted, as the server sends it)")
end
wrk.headers["If-None-Match"] = etag
