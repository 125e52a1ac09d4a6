"""escalation: owns each case after dispatch — its clocks, the department callbacks, the ladder."""
