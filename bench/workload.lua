-- SPDX-License-Identifier: BSD-2-Clause
-- wrk workload for env_gateway: cycles through (token, account) pairs.
--   wrk ... -s workload.lua URL -- PAIRS_FILE [PATH] [noaccount]
--   wrk ... -s workload.lua URL -- REQUESTS_FILE
-- PAIRS_FILE: lines "token account environment_id" (bench/seed.pl).
-- PATH: request path (default "/"); the account goes in
-- ?integrated_account_id= unless the third argument is "noaccount".
-- REQUESTS_FILE: lines "token /path?query [status]" (seed.pl --valid,
-- --mix), sent as they are.
-- Requests are formatted once in init(); done() prints one BENCH line.

local reqs, n, i = {}, 0, 0

function init(args)
   local file, path, mode = args[1], args[2] or "/", args[3]
   local tid = (wrk.thread and tonumber(wrk.thread:get("id"))) or 0
   for line in io.lines(file) do
      local tok, acct = line:match("^(%S+)%s+(%S+)")
      if tok then
         local p = path
         if acct:sub(1, 1) == "/" then
            p = acct
         elseif mode ~= "noaccount" then
            p = path .. "?integrated_account_id=" .. acct
         end
         n = n + 1
         reqs[n] = wrk.format("GET", p, { ["Authorization"] = "Bearer " .. tok })
      end
   end
   if n == 0 then error("no pairs in " .. tostring(file)) end
   -- threads start at different offsets
   i = (tid * 7919) % n
end

function setup(thread)
   setup_count = (setup_count or 0)
   thread:set("id", setup_count)
   setup_count = setup_count + 1
end

function request()
   i = i % n + 1
   return reqs[i]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect, e.read, e.write, e.timeout))
end
