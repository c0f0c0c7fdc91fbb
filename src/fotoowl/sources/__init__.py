"""Where images come from: one subpackage per source (today `google_drive`), each turning what a user
pastes into a folder to walk and files to stream. A `Source` protocol that every source implements will
follow, so the pipeline can stop naming Google Drive.
"""
