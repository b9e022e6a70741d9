"""Five transfers of 10 from account 1 to account 2, each exactly once: a serialization failure is
retried after a rollback; a connection lost around COMMIT is resolved by looking for the transfer's id,
written in the same transaction, before trying again. Run under faultline (scenario.lua); the proxy's
address comes from FAULTLINE_DB_ADDR (`faultline run`)."""
import os
import sys
import time

import psycopg2
import psycopg2.errors

host, port = os.environ.get("FAULTLINE_DB_ADDR", "127.0.0.1:6543").rsplit(":", 1)
DSN = f"host={host} port={port} user={os.environ.get('PGUSER', 'postgres')} dbname={os.environ.get('PGDATABASE', 'postgres')} connect_timeout=5"


def connect():
    return psycopg2.connect(DSN)


def setup(conn):
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS accounts, transfers")
        cur.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        cur.execute("CREATE TABLE transfers (id text PRIMARY KEY)")
        cur.execute("INSERT INTO accounts VALUES (1, 100), (2, 100)")


def transfer(conn, transfer_id, amount):
    """Returns the connection to go on with (a new one after a lost connection)."""
    for attempt in range(10):
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM transfers WHERE id = %s", (transfer_id,))
                if cur.fetchone():
                    conn.rollback()
                    return conn  # it happened: the COMMIT we never heard about went through
                cur.execute("UPDATE accounts SET balance = balance - %s WHERE id = 1", (amount,))
                cur.execute("UPDATE accounts SET balance = balance + %s WHERE id = 2", (amount,))
                cur.execute("INSERT INTO transfers VALUES (%s)", (transfer_id,))
            conn.commit()
            return conn
        except psycopg2.errors.SerializationFailure:
            print(f"{transfer_id}: serialization failure, retrying")
            conn.rollback()
        except psycopg2.OperationalError as e:
            print(f"{transfer_id}: connection lost ({str(e).strip()}), checking before retrying")
            time.sleep(0.05 * attempt)
            conn = connect()
    sys.exit(f"{transfer_id}: gave up")


conn = connect()
setup(conn)
for n in range(1, 6):
    conn = transfer(conn, f"t{n}", 10)
with conn.cursor() as cur:
    cur.execute("SELECT id, balance FROM accounts ORDER BY id")
    balances = dict(cur.fetchall())
    cur.execute("SELECT count(*) FROM transfers")
    done = cur.fetchone()[0]
conn.close()
if balances != {1: 50, 2: 150} or done != 5:
    sys.exit(f"wrong result: balances {balances}, {done} transfers recorded")
print("balances exact:", balances)
