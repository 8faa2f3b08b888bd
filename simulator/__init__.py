"""A fleet of motors that degrade, fail and get repaired, with sensor faults and ground truth."""
