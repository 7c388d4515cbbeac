from segdet.cli import main

main()
