-- API-key creation no longer takes an Idempotency-Key: its stored response
-- held the key in clear (and so did every backup). Drop those records.
DELETE FROM idempotency_keys
 WHERE CAST(body AS TEXT) LIKE '%"object":"api_key"%'
   AND CAST(body AS TEXT) LIKE '%"key":"tg_%';
