-- Money transfers (app.py) must stay exact when PostgreSQL aborts and connections drop:
--   faultline run scenario.lua -- python3 app.py
seed(3)

local db = proxy { name = "db", listen = "127.0.0.1:6543", upstream = "127.0.0.1:5432", protocol = "postgres" }

-- Concurrent updates: the 1st and 4th debit fail with a serialization failure; the transaction is then
-- aborted (25P02 for anything but ROLLBACK), exactly as on a real server.
db:rule {
  name   = "serialize",
  match  = { query = prefix "UPDATE accounts SET balance = balance -" },
  nth    = { 1, 4 },
  action = postgres.error { sqlstate = "40001", message = "could not serialize access due to concurrent update" },
}

-- The connection is lost on the 3rd COMMIT, after the server committed: the app never hears back. Does
-- it retry and move the money twice?
db:rule {
  name   = "lost-commit",
  match  = { query = prefix "COMMIT" },
  nth    = 3,
  action = drop { after_forward = true },
}

expect { rule = "serialize", fired = 2 }
expect { rule = "lost-commit", fired = 1 }
