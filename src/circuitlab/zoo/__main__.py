import sys

from circuitlab.zoo.build import main

sys.exit(main())
