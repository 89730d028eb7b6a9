-- A prompt version's score as running sums: a rating adds its options' ratings in one UPDATE
-- (the row's lock makes concurrent additions exact), instead of locking the row and averaging
-- every rating of the version again while every other rating of that version waits.
ALTER TABLE prompt_versions
    ADD COLUMN rating_sum   bigint  NOT NULL DEFAULT 0 CHECK (rating_sum >= 0),
    ADD COLUMN rating_count integer NOT NULL DEFAULT 0 CHECK (rating_count >= 0);

UPDATE prompt_versions v SET rating_sum = s.total, rating_count = s.n
FROM (SELECT prompt_version_id, sum(rating)::bigint AS total, count(*)::int AS n
      FROM parameter_experiments
      WHERE rating IS NOT NULL
      GROUP BY prompt_version_id) s
WHERE v.id = s.prompt_version_id;
