from ralph.entry import main

main()
