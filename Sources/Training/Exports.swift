// The command-line tool talks only to Training; these engine types appear in its API.
@_exported import struct Engine.ModelSpec
@_exported import struct Data.AugmentationConfig
@_exported import struct Data.ElasticDistortion
@_exported import struct Engine.LearningRatePolicy
@_exported import enum Engine.ConvolutionAlgorithm
