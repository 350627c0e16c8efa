"""The fault-injection suite (issue 11): ``make faults``. Not part of ``make test``: it runs its own processes."""
