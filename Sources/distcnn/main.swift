import CLI

Distcnn.main()
