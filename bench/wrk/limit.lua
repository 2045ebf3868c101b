
-- Appended to post.lua when a run is bounded by count: stop at the limit.
function response(status, headers, body)
  if limit > 0 and counter >= limit then
    wrk.thread:stop()
  end
end
