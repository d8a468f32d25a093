from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "source_event" ADD "event_id" CHAR(32) UNIQUE;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "uid_source_even_event_i_ce324b";
        ALTER TABLE "source_event" DROP COLUMN "event_id";"""


MODELS_STATE = (
    "eJztmV9z4jYQwL+Kxi8lM2mOAEnovRFCEjoJdBKmvbnLjS1sARpsySeJECbNd68k/zc2gW"
    "smJZQ3e7W7Xv+0lrTrZ8OjDnL50R0U6I7Ojc/g2SDQQ/IiP3QIDOj7yYASCDh0tS6TSqbA"
    "9lSrDblg0BZyYARdjqTIQdxm2BeYEqWufIIJ5oKyxWdACQKMzoGPGPBnQxfzCXKA8gYq2E"
    "GeTwUiQqppmYmdA/UUh9ryMZiMlcO+dJGYPkJ3hgAdac8OZshWDwYjRj0tQk/2BJKxfFxF"
    "vwGwrPgFLOvg6IE8ECt8lgUwB2Ii/VAPYvILB3FI9gJMkYwfAoYkEfyIWBT3BIvAakbwDx"
    "kLJg56ApA40tsD4VPs+1J1uNA6DPmUY8VCeresfg+0+73Lm257AC76oNcfXHd7V5Z1pN46"
    "8GcKOkbSlMl3//ZdirV/xNXtszHCyHX0tRG/qSYWkdBTx02PG8oWPfkMcS7lPHIXpUBMxf"
    "QhZqa0wc6Ttl74WsHQ9nK29c2LsvWnpg4gk0vYUZpabka253jcJeJS66rohqZN3ZlHEn1/"
    "ISaUxAaYCCUdI4JUYOoJgs1UepGZ64apGGVcACpRCQilbBw0gjNXJamyDgJIZIZpSvDmfW"
    "dgmsZSAkcWqRQMRbakKHHIULkGMFYh/PpbrVavn9Wq9dPmSePs7KRZbUpdHe/y0NlLEExC"
    "K3ClmXWvur2BCojKLyz49pTgRdtAAc1k8hP6YSovT8EllkjaE8iKZyFll5sK+Y75qYjAb+"
    "9cePDJdBEZi4m8rddWYG5ft+4q9dpBFnTvz9adGqnpIYU8QZz50LKQy/lmjN6GcCRIECdL"
    "8HYxDmFuhjmzhK2LOWO0x7wGZr2BLiO+QDb2oFtMObbJEXYCo6PQ+APSXkH3otPu3rZuKv"
    "Xq4XFVA+Y/XCxQmnyjmscb7L0bbYixyet74gcg+p7bYgo7g4T7lIlNFo+M0Q4uHs011o5m"
    "6dLRzKe2i8YFmf37vTzQFuKN9POLBrYF+BvI8/xHTO8VSBUJ5dnjcqFIs6zctr7kMbdv+u"
    "caDuVizLQX7eA8B10+G0Gv8IRXntgZox1M7MY6md0oT+3GUm7bEpiEYcKCBeRCjgjsoWLW"
    "Wct8roemR9HFu6Lv0Xnl4N9Al6/m9Im7MILT/Arog+5t537Quv0j8wFctAYdNVLT0kVOWj"
    "nNTVDsBPzVHVwDdQu+9nud/HcS6w2+GiomOBPUJHRuQidVeETSiJeuYEfTVBWlBENoT+eQ"
    "OebSCK3RMt3lIa/m5SWQwLGeLQVXhRk2Xe7pjNmo84iIKGnL5DQOV3VnuNY1kVJer0ETeA"
    "cTBF0xSTo1M/+TQ+fkExfQRUD74/kejZaWNmkKPKhGDQRBjElDJh2zZR0cRp0U1SQKzLDz"
    "Mx2RwO/aHZB0GGZ4s2+DbPN5r7wNkkz92ntkbLGDG+Tbl43yoxab8Y0MdhDv8ekaeI/z21"
    "uCVw3t65f3rl/kaYYXdZcGcnkvBpxY7ATdVee3zpfB6tolPr7d9HtXkXq+oNn3QragF7It"
    "JeMW/RF4+4IxOgpv/OMlbfhTnEOK24j5jX+87IvyfVH+TkV5CzFsT4yCYjwcOVxVhMNE57"
    "Xyu3yeXy92N6o9/y+FZ+24cdZo1k8b8Z4aS1Ztpa+XlI+I8Q3/RqZMduLAmF3daycna+yi"
    "Uqt0iddj2TVefVQbEA7Vd5DucbW6TlFZrZZXldWlv5HyiSJsDK771yZlsv9xs+GPm/90M3"
    "v5Bz8bu/0="
)
