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
        ALTER TABLE "rate_tick" ALTER COLUMN "value" TYPE DECIMAL(30,10) USING "value"::DECIMAL(30,10);
        ALTER TABLE "rate_tick" ALTER COLUMN "value" TYPE DECIMAL(30,10) USING "value"::DECIMAL(30,10);"""


MODELS_STATE = (
    "eJztmV9z4jYQwL+Kxi8lM2mOAEnovRFCEjoJdBLau7lLxxa2AA225JNEgEnz3SvJ/40hkG"
    "ZSwvFmr3bX65/Wknb9ZHjUQS4/uoMC3dGp8Rk8GQR6SF7khw6BAX0/GVACAfuu1mVSyRTY"
    "Hmu1PhcM2kIODKDLkRQ5iNsM+wJTotSVTzDCXFA2/wwoQYDRKfARA/6k72I+Qg5Q3kAJO8"
    "jzqUBESDUtM7FzoJ7iUFs+BpOhctiVLhLTR+hOEKAD7dnBDNnqwWDAqKdFaGaPIBnKx5X0"
    "GwDLil/Asg6OHsgDscJnWQBzIEbSD/UgJr9wEIdkz8EYyfghYEgSwY+IRXGPsAisJgT/kL"
    "Fg4qAZgMSR3h4IH2Pfl6r9udZhyKccKxbSu2V1O6DZ7VzetJs9cNEFnW7vut25sqwj9daB"
    "P1PQIZKmTL7797+lWPtHXN0+GQOMXEdfG/GbamIRCT113PS4oWzRzGeIcynnkbsoBWIqpg"
    "8xM6UNdmbaeu5rBUPby9nWN8/K1h+bOoBMLmFHaWq5Gdme42GbiEutq6LrmzZ1Jx5J9P25"
    "GFESG2AilHSICFKBqScINlHpRSauG6ZilHEBqEQlIJSycdAATlyVpMo6CCCRGaYpwZv3rZ"
    "5pGgsJHFmkUjAU2ZKixCFD5RrAUIXw62+VSrV6VilXT+sntbOzk3q5LnV1vItDZ89BMAmt"
    "wJVm1r5qd3oqICq/sODbU4JnbQMFNJPJT+iHqbw4BZdYImmOICuehZRdbirkO+anIgK/vX"
    "PhwZnpIjIUI3lbrazA3Lxu3JWqlYMs6M5fjTs1UtFDCnmCOPOhZSEv55sxehvCkSBBnCzB"
    "28U4hLkZ5swSti7mjNEe8xqY9Qa6iLg1k7v6BbKxB91i1LFhDrMTGB2Fxh8Q+QrEnT9vW3"
    "ftZo5hv2jBfZlgv3C93ZxfuLJ+WHyQj1+DLzT76fEFx7uNzlyxycvHrg/wvb7nySuFnUHC"
    "fcrEJvtTxmgH96f6GttTfenuVM9vTi4aFmT27/eyZirEG+nn1wRsC/APkCXjR0zvFUgVCe"
    "XZ4/yHm2ZZum18zWNu3nTPNRzKxZBpL9rBeQ66fDaCXmERsTyxM0Y7mNi1dTK7tjy1awu5"
    "bUtgEoYJCxaQCzkisIeKWWct87kemh5FF++KvkOnpYP/Al2+mtMl7jzcl1dA77VvW/e9xu"
    "0fmQ/gotFrqZGKls5z0tJpboJiJ+BLu3cN1C341u208t9JrNf7ZqiY4ERQk9CpCZ1UbRtJ"
    "I166STIYpwp1JehDezyFzDEXRmiFLtNdHPIqXl4CCRzq2VJwVZhhX++eTpiNWo+IiCWdv5"
    "zG4aoGINe6JlLK6/UAA+9ghKArRkkzcOJ/cuiUfOICughofzzfBtTSpX3AAg+qFwhBEGPS"
    "80vHbFkHh1GzTvUhAzPsvKbpFvhdu8mWDsMMb/adtm0+7y3vtCVTv/YeGVvs4Ab59p0J+V"
    "GLzfhGBjuI9/h0DbzH+e0twauG9vXLe9cv8jTDixqYPbm8FwNOLHaC7qrzW+trb3XtEh/f"
    "brqdq0g9X9DseyFb0AvZlpJxi346vX3BGB2FN/63lzZ8Fed8h3SLML/xv719Ub4vyt+pKG"
    "8ghu2RUVCMhyOHq4pwmOi8VH4vn+eXi92Nas+fpfCsHNfOavXqaS3eU2PJqq305ZLyETG+"
    "4Q/vlMlOHBizq3vl5GSNXVRqLV3i9Vjud6P8qDYgHKrvIN3jcnmdorJcXl5VqrHcDkqJCB"
    "uD6/61SZnsf9xs+OPmf93Mnv8FugyGSA=="
)
