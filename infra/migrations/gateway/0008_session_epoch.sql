-- Browser sessions carry the user's epoch from when they were issued; raising it (logout,
-- password change, disabling the user) ends every session issued before.
ALTER TABLE users ADD COLUMN session_epoch integer NOT NULL DEFAULT 0;
