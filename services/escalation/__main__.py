from services.escalation.app import main

main()
