-- PostgreSQL faults per statement: retries on serialization failures, a lost COMMIT, a terminated backend.
-- Point the app at 127.0.0.1:6543 instead of :5432.  See docs/postgres.md.
local pg_port = os.getenv("PGPORT") or "5432"

seed(7)

local pg = proxy { name = "pg", listen = "127.0.0.1:6543", upstream = "127.0.0.1:" .. pg_port,
                   protocol = "postgres" }

-- a fifth of the balance updates fail to serialize: the transaction is failed until the app rolls back
pg:rule { name = "serialize", match = { query = prefix "UPDATE accounts" }, probability = 0.2,
          action = postgres.error { sqlstate = "40001",
                                    message = "could not serialize access due to concurrent update" } }
-- the first COMMIT of each database user is lost on the way: nothing is committed
pg:rule { name = "lose-commit", match = { query = pattern "^%s*[Cc][Oo][Mm][Mm][Ii][Tt]" }, key = "user", nth = 1,
          action = drop() }
-- the third COMMIT is committed, but the answer never comes back
pg:rule { name = "commit-unknown", match = { query = pattern "^%s*[Cc][Oo][Mm][Mm][Ii][Tt]" }, nth = 3,
          action = drop { after_forward = true } }
-- the 50th query of each connection finds its backend terminated
pg:rule { name = "terminated", match = { message = "Query" }, key = "connection", nth = 50,
          action = postgres.fatal { sqlstate = "57P01", message = "terminating connection due to administrator command" } }

expect { rule = "serialize", fired_at_least = 1 }
