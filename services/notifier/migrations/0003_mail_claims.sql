-- A mail is claimed ('sending') before it is handed to SMTP, so two deliveries of the same event
-- (a redelivery racing the original, or two replicas) cannot both send it.
ALTER TABLE sent_mail DROP CONSTRAINT sent_mail_outcome_check;
ALTER TABLE sent_mail ADD CONSTRAINT sent_mail_outcome_check CHECK (outcome IN ('sending', 'sent', 'rejected'));
