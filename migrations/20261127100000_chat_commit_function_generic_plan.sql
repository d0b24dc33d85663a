-- chat.commit_messages plans its statements once per session instead of on every call.
--
-- PL/pgSQL caches a plan per statement, but under plan_cache_mode = auto the plan cache keeps
-- replanning statements with parameters ("custom plans") while it judges them cheaper than a
-- generic plan. For the big statement of this function that judgement held on every call, and
-- planning it cost more than running it: on this project's 2-CPU benchmark machine one
-- single-message call took 1.5-1.7 ms, of which about 0.7 ms was planning (pgbench, one client,
-- prepared). With generic plans: 0.87-0.97 ms for one message, and no slower for batches of 100
-- messages (10.9-11.8 ms against 11.8-14.2 ms) or one message with 1,000 keys (22.0-22.5 ms
-- against 24.3-25.1 ms). The statements' plans do not depend on the arrays' sizes in a way that
-- matters: index lookups by key for the locks and retries, hash joins between the batch's rows.
alter function chat.commit_messages(
    uuid[], uuid[], uuid[], uuid[], text[], bytea[], bytea[], bytea[], bytea[], bytea[],
    bigint[], uuid[], bytea[], bytea[]
) set plan_cache_mode = force_generic_plan;
