import sys

from model_selector.cli.main import main

sys.exit(main())
