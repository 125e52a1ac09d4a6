from services.router.app import main

main()
