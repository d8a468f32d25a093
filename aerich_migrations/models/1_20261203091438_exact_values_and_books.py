from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


# Exact values and the book behind them (API v2). Both statements change only the catalogue on
# PostgreSQL: a nullable column without a default, and numeric(30,10) -> unconstrained numeric,
# which needs no table rewrite; older rows keep their values (rounded to 8 places when written).
async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "rate_tick" ADD "ask" NUMERIC;
        ALTER TABLE "rate_tick" ADD "bid" NUMERIC;
        ALTER TABLE "rate_tick" ALTER COLUMN "value" TYPE NUMERIC USING "value"::NUMERIC;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "rate_tick" DROP COLUMN "ask";
        ALTER TABLE "rate_tick" DROP COLUMN "bid";
        ALTER TABLE "rate_tick" ALTER COLUMN "value" TYPE DECIMAL(30,10) USING "value"::DECIMAL(30,10);"""


MODELS_STATE = (
    "eJztmV9z4jYQwL+Kxi8lM2mOGJLQeyOEJHQu0Eloe3NNxxa2AA225JNEgEnz3SvJ/7AxxF"
    "xvUsLxZq921+uf1pJ2/Wz41EUeP7mHAt3TmfERPBsE+khe5IeOgQGDIB1QAgEHntZlUskS"
    "2JlotQEXDDpCDgyhx5EUuYg7DAcCU6LUlU8wxlxQtvgIKEGA0RkIEAPBdOBhPkYuUN5ABb"
    "vID6hAREg1LbOwe6Se4lJHPgaTkXLYky5S0yfoTRGgQ+3ZxQw56sFgyKivRWjujCEZycdV"
    "9BsA205ewLaPTh7JI7GjZ9kAcyDG0g/1ISY/cZCE5CzABMn4IWBIEsFPiMVxj7EIraYEf5"
    "WxYOKiOYDEld4eCZ/gIJCqg4XWYSigHCsW0rtt97qg1etef+q0+uCqB7q9/m2ne2PbJ+qt"
    "Q3+WoCMkTZl897/+lmLtH3F1+2wMMfJcfW0kb6qJxST01HHL54ayRfOAIc6lnMfu4hRIqF"
    "gBxMySNtida+tFoBUMbS9nW9+8KNtgYukAMrmEXaWp5VZse4lHHSKuta6KbmA51Jv6JNUP"
    "FmJMSWKAiVDSESJIBaaeINhUpReZel6UinHGhaBSlZDQko2LhnDqqSRV1mEAqcywLAneem"
    "j3LctYSeDYYikFI5EjKUocMlSuAYxUCD//Ypq12oVZrZ03zuoXF2eNakPq6nhXhy5ewmBS"
    "WqErzaxz0+n2VUBUfmHht6cEL9oGCmilk5/Sj1J5dQqusUTSGkNWPAtLdrmpkO+Yn4oY/O"
    "7OhQ/nlofISIzlbc3cgLl127yv1MyjLOjuH817NWLqIYU8RZz50LKQ1/PNGH0fwrEgRZwu"
    "wbvFOIK5HebMElYWc8bogLkEZr2BriJuz+WufoUc7EOvGHVimMPshkYnkfE7RL4Bcff3u/"
    "Z9p5VjOChacF8nOChcb7fnF62s7xYf5JNvwReZ/fD4wuPdVmeuxOT1Y9c7+F7f8uS1hJ1B"
    "wgPKxDb7U8ZoD/enRontqbF2d2rkNycPjQoy+9cHWTMV4o3182sCdgT4B8iS8T2m9wakio"
    "Ty7HP+1VtmWblrfs5jbn3qXWo4lIsR0160g8scdPlsBP3CImJ9YmeM9jCx62Uyu74+tesr"
    "ue1IYBKGBQsWkCs5IrCPillnLfO5HpmexBdvir5LZ5Wj/wJdvprbI94i2pc3QO937toP/e"
    "bdb5kP4KrZb6sRU0sXOWnlPDdBiRPwZ6d/C9Qt+NLrtvPfSaLX/2KomOBUUIvQmQXdpdo2"
    "lsa8dJNkOFkq1JVgAJ3JDDLXWhmhJl2nuzrkm35eAgkc6dlScFWYUV/vgU6Zg9pPiIg1nb"
    "+cxvGmBiDXuhZSyuV6gKF3MEbQE+O0GTgNPrh0Rj5wAT0EtD+ebwMm60pxI7DAhWoGQhAG"
    "mTb9loO27aPjuFunGpHhM4AcYYtv6byFvkt32pZDsaKbQ7ttlw9969tt6dSX3igTiz3cJb"
    "9/e0J+2GI7vrHBHuI9PS+B9zS/x6V41dChiHnrIkZuLryoi9mXy3sx4NRiL+huOsS1P/c3"
    "FzDJGe5Tr3sTq+ermkNDZAcaIrtSN+7Qn6dD1XioGt9t1dhEDDtjo6BajEaON1WJMNV5rT"
    "5cP8+vF2Jb1UU/SlFkntYv6o3aeT1Z7xPJpmX+9XLnCTG+5R/ZJZO9OMxkF3jz7KzECi+1"
    "1i7xeiz3P0x+VFsQjtT3kO5ptVqm4KlW11c8aiy3g1Iios5V2d8KSyaHPwtb/ln4Xzezl3"
    "8Bb/0Wtg=="
)
