"""The service layer: the job lifecycle, auth and administration, independent of any transport."""
